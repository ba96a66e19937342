"""Source media in (and audio out): audio files and waveforms, video files, images prepared as the official
loader prepares them. Pure I/O and signal math; no model is loaded here (except reading an audio VAE's config).

- `audio`: `load_audio`, `resample_audio`, `to_channels`, `waveform_to_mel` (official mel front end), `save_audio`
- `video`: `load_video`, `probe_video`
- `image`: `load_image`, `pil_to_rgb` (any PIL mode by its true range), `crf_compress` (official H.264
  recompression), `resize_center_crop`
- `frames`: `as_frames`, the one normalisation of every video / image input (paths, PIL, arrays, tensors)
"""

from .audio import DEFAULT_N_FFT, load_audio, resample_audio, save_audio, to_channels, waveform_to_mel
from .dsp import log_mel_spectrogram, mel_filterbank
from .frames import as_frames
from .image import DEFAULT_IMAGE_CRF, crf_compress, load_image, pil_to_rgb, resize_center_crop
from .video import VideoInfo, load_video, probe_video

__all__ = [
    "DEFAULT_IMAGE_CRF", "DEFAULT_N_FFT", "VideoInfo", "as_frames", "crf_compress", "load_audio", "load_image",
    "load_video", "log_mel_spectrogram", "mel_filterbank", "pil_to_rgb", "probe_video", "resample_audio",
    "resize_center_crop", "save_audio", "to_channels", "waveform_to_mel",
]
