"""DCLS: Dilated Convolution with Learnable Spacings (Khalfaoui-Hassani et al., ICLR 2023).

Layers whose few kernel elements sit at learnable real-valued positions inside a large dilated
kernel. This package has no dependency beyond PyTorch.

>>> import dcls
>>> layer = dcls.Dcls2d(96, 96, kernel_count=34, dilated_kernel_size=17, padding=8, groups=96,
...                     version="bilinear")
"""

from dcls.algorithms import CONV_ALGORITHMS
from dcls.conv import Dcls1d, Dcls2d, Dcls3d, DclsPositions
from dcls.create import create_conv
from dcls.functional import VERSIONS, construct_kernel
from dcls.model_tools import (
    SHARED_POSITIONS_NAME,
    convert,
    freeze,
    is_depthwise,
    load_authors_state_dict,
    replace_modules,
)
from dcls.param_groups import DCLS_GROUP_KEY, describe_param_groups, param_groups
from dcls.positions import (
    REPULSIVE_FORMULAS,
    PositionSet,
    clamp_,
    position_sets,
    position_statistics,
    repulsive_loss,
    set_sigma_,
    sigma_parameters,
)

__all__ = [
    "CONV_ALGORITHMS",
    "DCLS_GROUP_KEY",
    "REPULSIVE_FORMULAS",
    "SHARED_POSITIONS_NAME",
    "VERSIONS",
    "Dcls1d",
    "Dcls2d",
    "Dcls3d",
    "DclsPositions",
    "PositionSet",
    "clamp_",
    "construct_kernel",
    "convert",
    "create_conv",
    "describe_param_groups",
    "freeze",
    "is_depthwise",
    "load_authors_state_dict",
    "param_groups",
    "position_sets",
    "position_statistics",
    "replace_modules",
    "repulsive_loss",
    "set_sigma_",
    "sigma_parameters",
]
