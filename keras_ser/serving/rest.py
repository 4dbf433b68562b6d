"""TensorFlow Serving's REST predict body -> the ``waveform`` input of an export.

A TensorFlow Serving REST request for a keras-ser export looks like
``{"instances": [[0.01, -0.02, ...]]}``; `rest_instances` checks such a body the way the
server would and returns the ``(batch, samples)`` float32 tensor, so a client can test a
request against a reloaded export (`keras_ser.serving.predict.load`) without a server.
"""

from __future__ import annotations

import json

import numpy as np
import tensorflow as tf

from keras_ser.serving.builders import INPUT_KEY


def _all_ints(rows) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for row in rows for v in row)


def rest_instances(body: str | bytes | dict) -> tf.Tensor:
    """Map a TensorFlow Serving REST predict body onto the signature's input tensor.

    Accepts the row format ``{"instances": [[samples...], ...]}`` (also
    ``{"instances": [{"waveform": [samples...]}, ...]}``) and the columnar format
    ``{"inputs": {"waveform": [[samples...], ...]}}`` or ``{"inputs": [[...], ...]}``.
    JSON numbers become float32, as TensorFlow Serving converts them to the signature's
    dtype.

    Args:
        body: The request body, as JSON text or the parsed dict.

    Returns:
        ``(batch, samples)`` float32 tensor for ``signature(waveform=...)``.

    Raises:
        ValueError: Not JSON or neither key present; instances of different lengths
            (ragged: send them in separate requests, as padding would change the
            prediction); not a list of sample lists; integer PCM (samples beyond +-1 that
            are all integers: divide by 32768); NaN/inf.
    """
    if isinstance(body, (str, bytes)):
        try:
            body = json.loads(body)
        except json.JSONDecodeError as err:
            raise ValueError(f"request body is not JSON ({err})") from None
    if not isinstance(body, dict):  # a malformed request, not a programming error
        raise ValueError("request body must be a JSON object with 'instances' or "  # noqa: TRY004
                         "'inputs'")
    if "instances" in body:
        rows = body["instances"]
        if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
            if not all(INPUT_KEY in r for r in rows):
                raise ValueError(f"every instance object needs the key '{INPUT_KEY}'")
            rows = [r[INPUT_KEY] for r in rows]
    elif "inputs" in body:
        rows = body["inputs"]
        if isinstance(rows, dict):
            if INPUT_KEY not in rows:
                raise ValueError(f"'inputs' has no key '{INPUT_KEY}' (got {sorted(rows)})")
            rows = rows[INPUT_KEY]
    else:
        raise ValueError("request body has neither 'instances' nor 'inputs'")
    if not isinstance(rows, list) or not rows:
        raise ValueError("expected a non-empty list of instances, each a list of samples")
    if not all(isinstance(r, list) for r in rows):
        raise ValueError("each instance must be a list of float samples (one utterance); "
                         "for one utterance send {\"instances\": [[...samples...]]}")
    lengths = sorted({len(r) for r in rows})
    if len(lengths) > 1:
        raise ValueError(f"ragged instances: utterances of {lengths} samples in one request; "
                         "the input is a (batch, samples) tensor, so send utterances of "
                         "different lengths in separate requests (padding would change "
                         "the prediction)")
    try:
        array = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"instances must hold numbers only ({err})") from None
    if array.ndim != 2:
        raise ValueError(f"instances must be lists of numbers, got nested shape "
                         f"{array.shape}")
    if array.size and np.max(np.abs(array)) > 1.0 and _all_ints(rows):
        raise ValueError("instances look like integer PCM (integers beyond +-1); send float "
                         "samples in [-1, 1]: divide int16 PCM by 32768")
    if not np.all(np.isfinite(array)):
        raise ValueError("instances contain NaN or infinite samples")
    return tf.constant(array.astype(np.float32))
