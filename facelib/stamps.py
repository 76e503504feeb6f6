"""The labels every image of a smoke run carries, and the help that says how to make a real one.

Plain text, at the bottom of the package: the generator, the notebooks, the command line and
the report all stamp or print these, so none of them has to import the others for them.
"""
from __future__ import annotations

__all__ = ["SMOKE_STAMP", "STAND_IN_STAMP", "SMOKE_HINT", "REAL_WEIGHTS_HELP", "RANDOM_ID_STAMP"]

#: Text stamped on every image produced with the untrained generator.
SMOKE_STAMP = "UNTRAINED GENERATOR - SMOKE RUN (not a real result)"
#: Stamp for images made from random stand-in latents because an earlier step's results were missing.
STAND_IN_STAMP = "STAND-IN INPUTS (random latents, not projections) - not a real result"

#: The short form of :data:`REAL_WEIGHTS_HELP` that goes under the stamp on smoke-run grids.
SMOKE_HINT = ("for real results put a StyleGAN2 FFHQ .pt/.pkl under data/ (or $FACELIB_DATA, or attach it on "
              "Kaggle); see `python -m facelib data status`")

#: How to turn a smoke run into a real one.
REAL_WEIGHTS_HELP = (
    "To get real results, attach a pretrained StyleGAN2 FFHQ generator: a rosinality .pt "
    "(e.g. stylegan2-ffhq-config-f.pt) or an NVIDIA stylegan2-ada-pytorch .pkl (e.g. ffhq.pkl). "
    "Put it anywhere under data/ (or a folder named by $FACELIB_DATA; on Kaggle attach the dataset "
    "sirtimio/style-gan-data), or fetch the report's datasets with `python -m facelib data download`. "
    "Face swap also needs ArcFace weights (sirtimio/arcface-weights) and projection uses LPIPS with "
    "torchvision's VGG16 weights (vgg16-397923af.pth). `python -m facelib data status` shows what was found.")

#: Stamp for images whose identity came from the untrained identity network.
RANDOM_ID_STAMP = "RANDOM IDENTITY NETWORK - SMOKE RUN"
