"""Audio I/O: open and read clips from any ``datasets`` audio item, and encode protected clips as WAV or FLAC bytes.

Reading: raw file bytes are read with `soundfile` (from ``Audio(decode=False)`` dicts, or from the source bytes
that a decoding column's ``AudioDecoder`` keeps), which is about 3x faster than decoding through torchcodec;
anything soundfile cannot read falls back to torchcodec.

Writing: each protected clip is written as a 32-bit float WAV by default (``output_format="wav"``), so the
stored audio is bit-for-bit what the transform computed: no clipping at ±1 and no 16-bit quantisation that
would erase small perturbations. ``output_format="flac"`` stores 24-bit FLAC instead (about 2x smaller;
quantisation step 1.2e-7, far below any useful perturbation).
"""

from __future__ import annotations

import io
import logging
import posixpath
import struct
from typing import Any, Literal

import numpy as np
import soundfile as sf

logger = logging.getLogger(__name__)

OutputFormat = Literal["wav", "flac"]
#: Each output format's soundfile ``(format, subtype)`` and file extension.
OUTPUT_FORMATS: dict[str, tuple[str, str, str]] = {
    "wav": ("WAV", "FLOAT", ".wav"),
    "flac": ("FLAC", "PCM_24", ".flac"),
}


_ABOVE_FULL_SCALE = (
    "A protected clip peaks at {peak:.3f}, above full scale (its source does too: protection never raises a clip's "
    "peak above max(1, its original peak)); {fmt} would clip it. Use output_format='wav' (32-bit float) for this "
    "dataset."
)


class Clip:
    """One audio item, opened: its format is known, its samples are read on demand, whole or by blocks."""

    __slots__ = ("row", "path", "sampling_rate", "frames", "channels", "_reader", "_array", "_position")

    def __init__(self, row: int, path: str | None, reader: sf.SoundFile | None, array: np.ndarray | None, sr: int):
        self.row, self.path, self.sampling_rate = row, path, int(sr)
        self._reader, self._array, self._position = reader, array, 0
        if reader is not None:
            self.frames, self.channels = int(reader.frames), int(reader.channels)
        else:
            assert array is not None
            self.channels, self.frames = array.shape

    def read_into(self, out: np.ndarray) -> None:
        """Write the samples into ``out[:, :frames]`` (``out`` is ``[channels, >= frames]`` float32), then close."""
        if self._array is not None:
            out[:, : self.frames] = self._array
            return
        assert self._reader is not None
        with self._reader:
            if self.channels == 1:
                got = len(self._reader.read(self.frames, dtype="float32", out=out[0, : self.frames]))
            else:
                data = self._reader.read(self.frames, dtype="float32", always_2d=True)
                got = len(data)
                out[:, :got] = data.T
        out[:, got : self.frames] = 0.0  # a file shorter than its header says: silence, as in read()

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` as float32 ``[channels, stop - start]`` (a view of the file's interleaved
        block). Consecutive ranges are read on without seeking, so a clip is read by blocks as fast as whole."""
        if self._array is not None:
            return self._array[:, start:stop]
        assert self._reader is not None
        if start != self._position:
            self._reader.seek(start)
        data = self._reader.read(stop - start, dtype="float32", always_2d=True)
        self._position = start + len(data)
        if len(data) < stop - start:
            data = np.concatenate([data, np.zeros((stop - start - len(data), self.channels), np.float32)])
        return data.T

    def close(self) -> None:
        """Close the file (reading again reopens nothing: open the item again)."""
        if self._reader is not None:
            self._reader.close()


def open_clip(item: Any, row: int, column: str = "audio") -> Clip:
    """Open one audio item without decoding it yet.

    Accepts ``{"bytes", "path"}`` dicts (``Audio(decode=False)``), ``AudioDecoder`` objects (decoding ``Audio``;
    their source bytes are read directly) and ``{"array", "sampling_rate"}`` dicts.

    Raises:
        ValueError: the item is not audio or has no data.
    """
    where = f"row {row} of the batch, column {column!r}"
    if item is None:
        raise ValueError(f"Missing audio ({where} is None). Remove rows without audio before protecting.")
    if hasattr(item, "get_all_samples"):  # torchcodec AudioDecoder (datasets >= 4)
        data, path = _decoder_source(item)
        return _open_encoded(data, path, row, fallback=item)
    if isinstance(item, dict) and "array" in item:
        data = np.asarray(item["array"], dtype=np.float32)
        sr = item.get("sampling_rate")
        if not isinstance(sr, (int, np.integer)) or sr <= 0:
            raise ValueError(f"Audio array without a valid sampling_rate ({where}): got {sr!r}.")
        data = data[None, :] if data.ndim == 1 else data
        if data.ndim != 2:
            raise ValueError(f"Audio array must be [samples] or [channels, samples] ({where}); got {data.shape}.")
        return Clip(row, item.get("path"), None, data, sr)
    if isinstance(item, dict) and ("bytes" in item or "path" in item):
        if item.get("bytes") is None and not item.get("path"):
            raise ValueError(f"Audio item has neither bytes nor path ({where}).")
        return _open_encoded(item.get("bytes"), item.get("path"), row, fallback=None)
    raise ValueError(
        f"Column {column!r} does not hold audio ({where} is a {type(item).__name__}). Expected an Audio "
        f"feature: cast it with ds.cast_column({column!r}, datasets.Audio()) or pass audio_column=... ."
    )


def read_clip(item: Any, row: int, column: str = "audio") -> tuple[np.ndarray, int, str | None]:
    """Read one audio item as float32 ``[channels, samples]``, its sampling rate and its path (see :func:`open_clip`).

    Raises:
        ValueError: the item is not audio, or holds NaN/inf samples.
    """
    clip = open_clip(item, row, column)
    data = np.zeros((clip.channels, clip.frames), dtype=np.float32)
    clip.read_into(data)
    check_finite(data[None], [clip], column)
    return data, clip.sampling_rate, clip.path


def check_finite(padded: np.ndarray, clips: list[Clip], column: str) -> None:
    """One reduction per batch; only on failure look for the offending clip to name it."""
    if np.isfinite(padded.sum()):  # NaN/inf propagate through a sum
        return
    for j, clip in enumerate(clips):
        if not np.isfinite(padded[j]).all():
            raise ValueError(
                f"Audio with NaN or infinite samples (row {clip.row} of the batch, column {column!r}, "
                f"path={clip.path!r}). Fix or drop that clip; PosCUDA refuses to write it."
            )


def _decoder_source(decoder: Any) -> tuple[bytes | None, str | None]:
    """The source file bytes and path behind a ``datasets`` decoding column's ``AudioDecoder``, when known.

    ``datasets`` (``Audio.decode_example``) keeps them on the private attribute ``_hf_encoded``; neither
    ``datasets`` nor torchcodec offers a public accessor. The public route, ``Audio().encode_example(decoder)``,
    returns that same dict when the attribute is there but otherwise re-encodes the decoded samples (slow, and
    not the source bytes). So read the attribute here, in one place; without it (a decoder made elsewhere, or a
    future ``datasets``) return ``(None, None)`` and the caller decodes through the decoder itself.
    """
    encoded = getattr(decoder, "_hf_encoded", None) or {}
    return encoded.get("bytes"), encoded.get("path")


def _open_encoded(data: bytes | None, path: str | None, row: int, fallback: Any) -> Clip:
    """Open file bytes (or a path) with soundfile; what it cannot read is decoded by ``fallback`` (or torchcodec)."""
    source: Any = io.BytesIO(data) if data is not None else path
    try:
        reader = sf.SoundFile(source)
        return Clip(row, path, reader, None, reader.samplerate)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:  # format soundfile cannot read: use torchcodec
        logger.debug("soundfile could not read %r (%s); decoding with torchcodec", path, err)
    if fallback is None:
        from torchcodec.decoders import AudioDecoder

        fallback = AudioDecoder(data if data is not None else path)
    decoded = fallback.get_all_samples()
    return Clip(row, path, None, decoded.data.cpu().numpy().astype(np.float32), decoded.sample_rate)


def encode_audio(data: np.ndarray, sampling_rate: int, output_format: OutputFormat = "wav") -> bytes:
    """Encode float32 ``[channels, samples]`` as file bytes, deterministically (same input, same bytes).

    ``"wav"`` is written here rather than by libsndfile, whose float WAVs carry a ``PEAK`` chunk with a
    timestamp: identical audio would get different bytes each second, defeating caching and comparison.
    """
    if output_format == "wav":
        return float_wav_bytes(data, sampling_rate)
    if data.size and float(np.abs(data).max()) > 1.0:
        raise ValueError(_ABOVE_FULL_SCALE.format(peak=float(np.abs(data).max()), fmt=output_format))
    fmt, subtype, _ = OUTPUT_FORMATS[output_format]
    buffer = io.BytesIO()
    sf.write(buffer, data.T, sampling_rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def float_wav_bytes(data: np.ndarray, sampling_rate: int) -> bytes:
    """A minimal RIFF/WAVE file of IEEE float32 samples (``WAVE_FORMAT_IEEE_FLOAT``, with the ``fact`` chunk)."""
    channels, frames = data.shape
    payload = np.ascontiguousarray(data.T, dtype="<f4").reshape(-1).view(np.uint8)  # no copy for mono
    return b"".join((_float_wav_header(channels, frames, sampling_rate), payload))


def _float_wav_header(channels: int, frames: int, sampling_rate: int) -> bytes:
    """The header of :func:`float_wav_bytes`, before ``frames * channels`` little-endian float32 samples."""
    block = 4 * channels
    payload = block * frames
    fmt = struct.pack("<HHIIHHH", 3, channels, sampling_rate, sampling_rate * block, block, 32, 0)
    return (
        b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 12 + 8 + payload) + b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"fact" + struct.pack("<II", 4, frames)
        + b"data" + struct.pack("<I", payload)
    )


class BlockEncoder:
    """Encode one clip written by blocks, holding the encoded file and one block: what :func:`encode_audio` gives
    for the whole clip, byte for byte.

    ``"wav"`` writes each block into its place in the output file, preallocated (its float32 payload is the
    only copy of the clip); ``"flac"`` streams the blocks through libsndfile's FLAC encoder. Blocks come in order
    from the clip's start; writing sample 0 again starts the clip over (a second pass that rewrites every
    sample).

    Args:
        output_format (`str`): ``"wav"`` or ``"flac"``.
        channels (`int`), frames (`int`), sampling_rate (`int`): of the clip.

    Example:

    ```py
    >>> import numpy as np
    >>> from hf_poscuda.audio_io import BlockEncoder, encode_audio
    >>> clip = np.linspace(-0.5, 0.5, 1000, dtype=np.float32)[None]
    >>> encoder = BlockEncoder("wav", 1, 1000, 8000)
    >>> for start in range(0, 1000, 300):
    ...     encoder.write(start, clip[:, start : start + 300])
    >>> bytes(encoder.getvalue()) == encode_audio(clip, 8000, "wav")
    True

    ```
    """

    def __init__(self, output_format: OutputFormat, channels: int, frames: int, sampling_rate: int) -> None:
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format must be one of {list(OUTPUT_FORMATS)}, got {output_format!r}.")
        self.output_format, self.channels, self.frames, self.sampling_rate = (
            output_format, channels, frames, sampling_rate)
        self._written, self._peak = 0, 0.0
        self._file: bytearray | None = None
        self._samples: np.ndarray | None = None
        self._flac: sf.SoundFile | None = None
        self._buffer: io.BytesIO | None = None
        if output_format == "wav":
            header = _float_wav_header(channels, frames, sampling_rate)
            self._file = bytearray(len(header) + 4 * channels * frames)
            self._file[: len(header)] = header
            self._samples = np.frombuffer(self._file, dtype="<f4", offset=len(header)).reshape(frames, channels)

    def write(self, start: int, block: np.ndarray) -> None:
        """Store samples ``[start, start + n)`` of the clip, ``block`` ``[channels, n]`` float32, in order."""
        if start == 0 and self._written:  # the clip again, from its start
            self._written, self._peak = 0, 0.0
            self._flac = self._buffer = None
        if start != self._written:
            raise ValueError(f"Blocks must come in order: expected sample {self._written}, got {start}.")
        if self._samples is not None:
            self._samples[start : start + block.shape[-1]] = block.T
        else:
            if block.size:  # checked when the clip is done: a pass that passes full scale may be written again
                self._peak = max(self._peak, float(np.abs(block).max()))
            if self._flac is None:
                fmt, subtype, _ = OUTPUT_FORMATS[self.output_format]
                self._buffer = io.BytesIO()
                self._flac = sf.SoundFile(self._buffer, "w", samplerate=self.sampling_rate, channels=self.channels,
                                          subtype=subtype, format=fmt)
            self._flac.write(block.T)
        self._written = start + block.shape[-1]

    def getvalue(self) -> bytes | bytearray:
        """The encoded file (a ``bytearray`` for WAV: no copy of the clip is made)."""
        if self._written != self.frames:
            raise ValueError(f"Only {self._written} of {self.frames} samples were written.")
        if self._file is not None:
            self._samples = None  # release the buffer's export
            return self._file
        if self._flac is None:  # an empty clip
            return encode_audio(np.zeros((self.channels, 0), np.float32), self.sampling_rate, self.output_format)
        if self._peak > 1.0:
            raise ValueError(_ABOVE_FULL_SCALE.format(peak=self._peak, fmt=self.output_format))
        self._flac.close()
        assert self._buffer is not None
        return self._buffer.getvalue()


def renamed(path: str | None, ext: str) -> str | None:
    """Same name with the output format's extension (datasets infers the format from it)."""
    if not path:
        return None
    stem, old = posixpath.splitext(path)
    return path if old == ext else (stem if old else path) + ext
