"""Mixed-modal retrievers: encoders, fusions, training and batched embedding (extra [clip]).

Importing this package imports torch (through the fusion registry); the rest of the toolkit
imports it only inside functions.
"""

from . import gemini, mteb_models, text_encoders  # noqa: F401 - register the sentence-transformers, st, gemini, mteb schemes
from .encoders import ENCODERS, Encoder, EncoderMetadata, OpenClipEncoder, load_encoder
from .fusion import FUSIONS, Fusion, get_fusion

__all__ = [
    "ENCODERS", "Encoder", "EncoderMetadata", "OpenClipEncoder", "load_encoder",
    "FUSIONS", "Fusion", "get_fusion",
]
