"""ViT-Tiny/16 by name: ``featviz.models.load("vit_tiny")``, a real vision transformer.

timm's ``vit_tiny_patch16_224`` (Dosovitskiy et al. 2021's ViT at width 192: 12 blocks of 3
heads, 16-px patches, a class token, 1000 ImageNet classes) with the preprocessing of Google's
AugReg weights (Steiner et al. 2022): ``(x - 0.5) / 0.5`` on every channel, not ImageNet's
statistics, at the one size its position embeddings take, 224 px. ``weights="default"`` is the
file :data:`VIT_TINY_FILE` in the folder ``$FEATVIZ_MODELS`` names (the hub's copy is a
download timm reads from the network, which machines without it do not reach); a local
state_dict in timm's layout loads as well.

Its layers keep timm's names, the ones transformer papers use: ``blocks.K`` is the residual
stream after block K, ``blocks.K.mlp.fc1`` / ``blocks.K.mlp.act`` the MLP's 768 hidden units
before / after the GELU, ``blocks.K.attn`` the attention's output, ``blocks.K.attn.qkv`` the
queries, keys and values of its heads, ``norm`` the last layer norm, ``head`` the logits. All
token layers are declared: the class token first, then the 14 x 14 patches row by row.
timm is imported only when the model is built.
"""

from __future__ import annotations

from torch import nn

from .courses import TRANSFORMER
from .imagenet import imagenet_classes
from .registry import register
from .sources import require
from .spec import ModelSpec, Request, WeightsSource

#: the timm architecture ``load("vit_tiny")`` builds
TIMM_NAME = "vit_tiny_patch16_224"
#: the file of weights ``load("vit_tiny")`` looks for in $FEATVIZ_MODELS
VIT_TINY_FILE = "vit_tiny_patch16_224_augreg_imagenet.pth"
#: AugReg's preprocessing (timm's pretrained config of this model says the same)
VIT_MEAN = (0.5, 0.5, 0.5)
VIT_STD = (0.5, 0.5, 0.5)
DEPTH = 12

# the submodules of a block whose outputs are token sequences [B, 1 + 196, C]; attn.q_norm
# and attn.k_norm give [B, heads, tokens, 64], which no layout describes, and are left out
_BLOCK_TOKEN_LAYERS = ("", ".norm1", ".attn", ".attn.qkv", ".attn.norm", ".attn.proj",
                       ".attn.proj_drop", ".ls1", ".drop_path1", ".norm2", ".mlp", ".mlp.fc1",
                       ".mlp.act", ".mlp.drop1", ".mlp.norm", ".mlp.fc2", ".mlp.drop2", ".ls2",
                       ".drop_path2")

#: where the class token and the patches are in each token layer (see featviz.core.layouts)
LAYOUTS = {
    "patch_embed": "tokens", "patch_embed.norm": "tokens",  # patches only, before the class token
    "pos_drop": "tokens+cls", "patch_drop": "tokens+cls", "norm_pre": "tokens+cls",
    "blocks": "tokens+cls", "norm": "tokens+cls",
    **{f"blocks.{k}{sub}": "tokens+cls" for k in range(DEPTH) for sub in _BLOCK_TOKEN_LAYERS},
}


def _build(request: Request) -> nn.Module:
    """timm's ViT-Tiny/16, randomly initialized; ``load`` reads the weights file into it."""
    timm = require("timm", "timm", "the vit_tiny model")
    return timm.create_model(TIMM_NAME, pretrained=False)


#: ``load("vit_tiny")``: ViT-Tiny/16 with AugReg's preprocessing and its token layouts
SPEC = register(ModelSpec(
    name="vit_tiny", build=_build, family="vit",
    description="ViT-Tiny/16 (timm vit_tiny_patch16_224, AugReg ImageNet-21k -> 1k): class "
                "token + 14x14 patches, timm's layer names",
    mean=VIT_MEAN, std=VIT_STD, input_size=224, fixed_size=True, classes=imagenet_classes,
    layouts=LAYOUTS, render=TRANSFORMER,
    weights=WeightsSource(f"$FEATVIZ_MODELS/{VIT_TINY_FILE}", kind="env", env="FEATVIZ_MODELS",
                          file=VIT_TINY_FILE,
                          what="ViT-Tiny/16 AugReg weights in timm's layout")))
