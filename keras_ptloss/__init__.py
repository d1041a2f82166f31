"""keras-ptloss: PTLoss knowledge distillation for Keras 3."""

from keras_ptloss.coefficients import convexity_margin
from keras_ptloss.losses import KDLoss
from keras_ptloss.losses import PTLoss
from keras_ptloss.losses import kd_loss
from keras_ptloss.losses import pt_loss
from keras_ptloss.version import __version__
