"""Make tests/data/ge2e_reference.json: the Resemblyzer package's own mel frames and embedding of a synthetic test
clip, to check hf_poscuda.evaluation.ge2e against. Run once, in an environment with librosa and the full package:

    pip install librosa webrtcvad resemblyzer==0.1.4 && python tests/make_ge2e_reference.py

Not run by the tests (they read the JSON it wrote).
"""

import json
from pathlib import Path

import numpy as np


def test_clip(seconds: float = 2.3, sr: int = 16000) -> np.ndarray:
    """A deterministic voiced-speech-like clip: a glottal-like harmonic series with vibrato and formant-ish
    resonances, an onset and a decay, and a little noise."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 + 15 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    formants = [(700, 1.0), (1200, 0.6), (2600, 0.3)]
    x = sum(amp * np.sin(k * phase) * sum(a / (1 + ((k * 140 - f) / 150) ** 2) for f, a in formants)
            for k, amp in ((k, 1 / k) for k in range(1, 40)))
    envelope = np.minimum(1, t / 0.1) * np.minimum(1, (seconds - t) / 0.3)
    rng = np.random.default_rng(0)
    return (0.05 * x * envelope + 0.002 * rng.standard_normal(len(t))).astype(np.float32)


if __name__ == "__main__":
    from resemblyzer import VoiceEncoder, audio

    wav = test_clip()
    normalised = audio.normalize_volume(wav, audio.audio_norm_target_dBFS, increase_only=True)
    mel = audio.wav_to_mel_spectrogram(normalised)
    encoder = VoiceEncoder("cpu", verbose=False)
    embedding = encoder.embed_utterance(normalised)
    short = audio.normalize_volume(wav[: int(0.6 * 16000)], audio.audio_norm_target_dBFS, increase_only=True)
    out = {
        "package": "resemblyzer 0.1.4 with librosa " + __import__("librosa").__version__,
        "clip": "tests/make_ge2e_reference.py test_clip() and its first 0.6 s, each volume-normalised as the package does (no VAD trimming)",
        "mel_shape": list(mel.shape),
        "mel_rows_0_5_10": mel[[0, 5, 10]].round(6).tolist(),
        "mel_sum": float(mel.sum()),
        "embedding": embedding.round(6).tolist(),
        "embedding_short_clip": encoder.embed_utterance(short).round(6).tolist(),
    }
    path = Path(__file__).parent / "data" / "ge2e_reference.json"
    path.write_text(json.dumps(out) + "\n")
    print("wrote", path)
