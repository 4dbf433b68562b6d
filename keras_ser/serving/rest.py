"""TensorFlow Serving's REST predict body -> the ``waveform`` input of an export.

A TensorFlow Serving REST request for a keras-ser export looks like
``{"instances": [[0.01, -0.02, ...]]}``; `rest_instances` checks such a body the way the
server would and returns the ``(batch, samples)`` float32 tensor, so a client can test a
request against a reloaded export (`keras_ser.serving.predict.load`) without a server.
`rest_speaker_inputs` does the same for the ``serve_speaker`` signature of a per-speaker
export (waveform plus the speaker's statistics).
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
            others = sorted({k for r in rows for k in r} - {INPUT_KEY})
            if others:
                raise ValueError(f"instances carry inputs {others} besides '{INPUT_KEY}'; "
                                 "for the serve_speaker signature use rest_speaker_inputs")
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


def rest_speaker_inputs(body: str | bytes | dict, metadata: dict) -> dict:
    """Map a REST body for a per-speaker export's ``serve_speaker`` signature onto its
    inputs, as TensorFlow Serving would.

    The row format ``{"signature_name": "serve_speaker", "instances": [{"waveform":
    [...], "speaker_mean": [m], "speaker_std": [s]}, ...]}`` (or ``speaker_min`` /
    ``speaker_max``; K values each, K from the export's ``speaker_inputs``).

    Args:
        body: The request body, as JSON text or the parsed dict.
        metadata: The export's ``keras_ser.json`` (`keras_ser.serving.predict.read_metadata`).

    Returns:
        ``{"waveform": (batch, samples), <speaker keys>: (batch, K)}`` float32 tensors.

    Raises:
        ValueError: The export has no speaker inputs; a missing or unexpected key; the
            wrong number of statistics; non-finite or degenerate statistics; anything
            `rest_instances` refuses in the waveforms.
    """
    spec = metadata.get("speaker_inputs")
    if not spec:
        raise ValueError("this export takes no speaker statistics (no speaker_inputs in its "
                         "metadata): send the waveform alone to serving_default")
    if isinstance(body, (str, bytes)):
        try:
            body = json.loads(body)
        except json.JSONDecodeError as err:
            raise ValueError(f"request body is not JSON ({err})") from None
    rows = body.get("instances") if isinstance(body, dict) else None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise ValueError("expected {\"instances\": [{\"waveform\": [...], "
                         + ", ".join(f'\"{k}\": [...]' for k in spec["keys"]) + "}, ...]}")
    keys, width = list(spec["keys"]), int(spec["shape"][1])
    for k, row in enumerate(rows):
        missing = [key for key in [INPUT_KEY, *keys] if key not in row]
        extra = sorted(set(row) - {INPUT_KEY, *keys})
        if missing or extra:
            raise ValueError(f"instance {k}: missing {missing}, unexpected {extra}")
    out = {INPUT_KEY: rest_instances({"instances": [r[INPUT_KEY] for r in rows]})}
    for key in keys:
        try:
            values = np.asarray([r[key] for r in rows], np.float64).reshape(len(rows), -1)
        except (TypeError, ValueError) as err:
            raise ValueError(f"'{key}' must hold numbers ({err})") from None
        if values.shape[1] != width:
            raise ValueError(f"'{key}' needs {width} value(s) per instance, got "
                             f"{values.shape[1]}")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"'{key}' holds NaN or infinite values")
        out[key] = values.astype(np.float32)
    first, second = (out[k] for k in keys)
    if np.any(second <= 0) if keys[1] == "speaker_std" else np.any(second <= first):
        raise ValueError(f"degenerate speaker statistics: {keys[0]} {first.tolist()}, "
                         f"{keys[1]} {second.tolist()}")
    return {k: tf.constant(v) for k, v in out.items()}
