"""Train NAG's conditional graph GAN on a NAS dataset, conditioned on the accuracy class.

    python gan.py --nas_dataset runs/nasdata-XYZ/archs.jsonl
    python gan_multiobj.py --nas_dataset runs/nasdata-XYZ/archs.jsonl      # accuracy and params classes

Jing, Xu and Zhang, "A Neural Architecture Generator for Efficient Search Space", Neurocomputing
2021 (reference `gan.py` / `gan_multiobj.py`): least-squares GAN (Mao et al., ICCV 2017)
with Adam(2e-4, (0.5, 0.999)); each architecture of archs.jsonl (written by build_nas_dataset.py)
gets a quantile class per objective (class n-1 = best accuracy / most parameters).

Run directory (--save): generator.pt and discriminator.pt (read by generate_archs*.py), checkpoint.pt
(--resume), metrics.jsonl (d_loss, g_loss per epoch), log.txt.  gan_multiobj.py is this script
with the objectives accuracy and params_MB and without gradient clipping, as in the reference.
"""
import sys

import cli
import nag_generator

main = cli.cli(lambda argv=None: nag_generator.train_gan(argv, ['accuracy'], clip_norm=0.01))

if __name__ == '__main__':
    sys.exit(main())
