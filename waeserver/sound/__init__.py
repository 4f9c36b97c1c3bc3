"""Layer 4, from log-mel to sound: the real-time inverters and their training, fine-tuning through
them, the checked bundle, the ``build-model`` pipeline, speed and quality measures, one note to a
file, the encoder as an audio effect. Imports the layers below."""
