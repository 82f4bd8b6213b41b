"""Imports every model family so each registers its builders. Add new family modules here."""
from . import unet  # noqa: F401
from . import unetpp, unet3p, multiresunet  # noqa: F401
from . import attention_unet, r2unet, dense_unet  # noqa: F401
from . import u2net, csnet, scse_unet  # noqa: F401
from . import ternausnet, resunet, cenet  # noqa: F401
from . import deeplab, pspnet  # noqa: F401
from . import hrnet, ocrnet  # noqa: F401
from . import danet, ocnet, eanet, lrf_eanet  # noqa: F401
from . import segnet, dlinknet, hardnet_mseg  # noqa: F401
from . import setr  # noqa: F401
