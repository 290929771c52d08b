"""A broad sample of timm architectures (one small variant per family, 40+ families), each at
its own default input size, random weights."""

from __future__ import annotations

from pathlib import Path

from . import Entry

ZOO = Path(__file__).resolve().parent / "zoo" / "timm_zoo.py"

# family: model (the smallest variant of the family that timm ships)
MODELS = {
    "resnet": "resnet18", "resnet-d": "resnet10t", "efficientnet": "efficientnet_b0",
    "mobilenetv3": "mobilenetv3_small_100", "mobilenetv2": "mobilenetv2_050",
    "convnext": "convnext_atto", "vit": "vit_tiny_patch16_224", "deit": "deit_tiny_patch16_224",
    "regnetx": "regnetx_002", "regnety": "regnety_002", "densenet": "densenet121",
    "dla": "dla34", "dpn": "dpn68", "ghostnet": "ghostnet_100", "hrnet": "hrnet_w18_small",
    "mixnet": "mixnet_s", "levit": "levit_128s", "mobilevit": "mobilevit_xxs",
    "mobilevitv2": "mobilevitv2_050", "efficientformer": "efficientformer_l1",
    "edgenext": "edgenext_xx_small", "crossvit": "crossvit_tiny_240", "cspnet": "cspresnet50",
    "gernet": "gernet_s", "hardcorenas": "hardcorenas_a", "lcnet": "lcnet_050",
    "repvgg": "repvgg_a0", "resnest": "resnest14d", "sknet": "skresnet18", "tinynet": "tinynet_e",
    "semnasnet": "semnasnet_050", "rexnet": "rexnet_100", "selecsls": "selecsls42b",
    "pit": "pit_ti_224", "poolformer": "poolformer_s12", "convit": "convit_tiny",
    "cait": "cait_xxs24_224", "eva02": "eva02_tiny_patch14_224", "fastvit": "fastvit_t8",
    "efficientvit": "efficientvit_b0", "mobileone": "mobileone_s0", "pvt_v2": "pvt_v2_b0",
    "xcit": "xcit_nano_12_p16_224", "coatnet": "coatnet_nano_rw_224", "gcvit": "gcvit_xxtiny",
    "vovnet": "ese_vovnet19b_slim", "mlp-mixer": "mixer_s32_224", "resmlp": "resmlp_12_224",
    "gmlp": "gmlp_ti16_224", "convnextv2": "convnextv2_atto", "starnet": "starnet_s1",
    "repghostnet": "repghostnet_050", "mobilenetv4": "mobilenetv4_conv_small",
    "repvit": "repvit_m0_9", "tiny_vit": "tiny_vit_5m_224", "hgnetv2": "hgnetv2_b0",
    "nfnet": "nf_regnet_b0", "cs3darknet": "cs3darknet_s", "dla-c": "dla46_c",
    "mambaout": "mambaout_femto",
}


def make(name: str):
    """The model the build makes from ZOO:<name>, with the same weights."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("timm_zoo", ZOO)
    zoo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zoo)
    return getattr(zoo, name)()


def entries() -> list[Entry]:
    import functools

    import timm

    found = []
    for family, name in MODELS.items():
        size = timm.get_pretrained_cfg(name).input_size  # (3, H, W)
        dims = ",".join(str(d) for d in size)
        found.append(Entry("timm", name, family, f"{ZOO}:{name}", (f"x:float32:{dims}",),
                           functools.partial(make, name)))
    return found
