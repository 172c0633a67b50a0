"""Transfer Studio's engine: image folders, pretrained backbones, freeze plans,
background training, saved runs. Knows nothing of Streamlit."""

__version__ = "0.1.0"
