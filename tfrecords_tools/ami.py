"""AMI Meeting Corpus (Carletta et al., "The AMI Meeting Corpus: a pre-announcement",
MLMI 2005); long multi-party meetings, unlabelled for emotion.

Release layout (as fetched by the corpus's download script)::

    amicorpus/ES2002a/audio/ES2002a.Headset-0.wav     one close-talking headset per speaker
    amicorpus/ES2002a/audio/ES2002a.Headset-1.wav
    amicorpus/ES2002a/audio/ES2002a.Mix-Headset.wav   all headsets mixed
    amicorpus/ES2002a/audio/ES2002a.Array1-01.wav     far-field array microphones

SRC_DIR is the ``amicorpus`` folder or the folder holding it. ``--channels`` picks the
individual headsets (default), the headset mix, or both; array microphones are never
converted (counted in ``stats.json``'s ``filtered``). Meetings last 20-50 minutes, so the
writer cuts each recording into 10 s records (`AMIReader.chunk_seconds`, overridden by
``--chunk-seconds``).
"""

from __future__ import annotations

import os
import re

from tfrecords_tools.reader import Reader, audio_files, register, require_dir
from tfrecords_tools.schema import Skipped, Utterance

CHANNELS = ("headset", "mix", "all")

_NAME = re.compile(r"^(?P<meeting>[^.]+)\.(?:(?P<headset>Headset-\d+)|(?P<mix>Mix-Headset)|"
                   r"(?P<array>Array\d+-\d+))$")


@register
class AMIReader(Reader):
    """AMI meetings: one utterance per headset (or mix) recording, chunked into 10 s.

    speaker is ``"<meeting>.Headset-N"`` (a headset is worn by one participant for the whole
    meeting) or ``"<meeting>.Mix"``; session is the meeting id.

    Args:
        channels: ``"headset"`` (each participant's headset), ``"mix"`` (the
            ``Mix-Headset`` recording) or ``"all"`` (both).

    Raises:
        ValueError: ``channels`` is not one of `CHANNELS`.
    """

    name = "ami"
    description = "AMI Meeting Corpus (amicorpus/<meeting>/audio/*.wav; unlabelled)"
    chunk_seconds = 10.0

    def __init__(self, channels: str = "headset"):
        if channels not in CHANNELS:
            raise ValueError(f"--channels must be one of {', '.join(CHANNELS)}, got "
                             f"'{channels}'")
        super().__init__(channels=channels)

    @classmethod
    def add_arguments(cls, parser):
        """Declare ``--channels``."""
        parser.add_argument(
            "--channels", choices=CHANNELS, default="headset",
            help="headset: one recording per participant (default); mix: the Mix-Headset "
            "recording; all: both")

    def scan(self, root):
        """Yield one unlabelled utterance per selected headset or mix recording.

        Args:
            root: The ``amicorpus`` folder (``<meeting>/audio/*.wav`` below it) or its parent.

        Raises:
            FileNotFoundError: ``root`` is not a folder or holds no AMI recording.
        """
        require_dir(root, "AMI corpus folder")
        amicorpus = os.path.join(root, "amicorpus")
        base = amicorpus if os.path.isdir(amicorpus) else root
        paths = audio_files(base, (".wav",))
        if not paths:
            raise FileNotFoundError(f"{base}: no AMI <meeting>/audio/*.wav recordings below it")
        keep_headset = self.options["channels"] in ("headset", "all")
        keep_mix = self.options["channels"] in ("mix", "all")
        for path in paths:
            stem = os.path.splitext(os.path.basename(path))[0]
            match = _NAME.match(stem)
            if not match:
                yield Skipped(path, "file name is not AMI's <meeting>.Headset-N.wav or "
                                    "<meeting>.Mix-Headset.wav")
                continue
            meeting = match["meeting"]
            if match["array"]:
                self.filter_out("array microphone (not converted)")
                continue
            if match["headset"] and not keep_headset:
                self.filter_out("headset channel (--channels mix)")
                continue
            if match["mix"] and not keep_mix:
                self.filter_out("mix channel (--channels headset)")
                continue
            speaker = f"{meeting}.{match['headset']}" if match["headset"] else f"{meeting}.Mix"
            yield Utterance(utterance_id=stem, corpus=self.name, audio_path=path,
                            speaker=speaker, session=meeting)
