"""Serving: the waveform-in models every recipe exports, in TensorFlow Serving's layout.

- `keras_ser.serving.layers`: the layers between a waveform and an utterance's answer
  (checks, VTLP copies, normalisation, sliding windows, mean or vote over windows).
- `keras_ser.serving.builders`: `FrontEnd` (data) and the models built from it.
- `keras_ser.serving.savedmodel`: `export_model` to ``export/<name>/<version>/``.
- `keras_ser.serving.predict`: load any export, classify files (``keras-ser predict``).
- `keras_ser.serving.rest`: TensorFlow Serving REST bodies -> input tensors.
"""
