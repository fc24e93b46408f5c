"""Image files made elsewhere (ComfyUI, AUTOMATIC1111, diffusers), opened under limits: a size and pixel cap
checked from the header before any pixel is decoded, PNG/JPEG/WebP only, 8-bit, transparency flattened the one
way the app shows it. Each comes back with its bytes (stored as they are) and what it says about itself."""
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ImageError, clip
from .image_meta import metadata

FORMATS = ("PNG", "JPEG", "WEBP")
MAX_SIDE_PIXELS = 2048
MAX_PIXELS = MAX_SIDE_PIXELS * MAX_SIDE_PIXELS  # 2048x2048; a larger image is refused before it is decoded
MIN_SIDE = 32
MAX_FILE_BYTES = 64 << 20
MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr")  # 8 bits a channel; others are refused
BACKGROUND = (255, 255, 255)  # transparent pixels are compared (and shown) over white
_USER_COMMENT = (0x8769, 0x9286)  # EXIF IFD, UserComment: where A1111 writes its infotext into JPEG and WebP


@dataclass(frozen=True)
class Picture:
    """One image file: its bytes, pixels as compared (uint8 H x W x 3), alpha if it had any, and its metadata."""
    name: str
    data: bytes = field(repr=False)
    format: str
    width: int
    height: int
    rgb: np.ndarray = field(repr=False)
    alpha: np.ndarray | None = field(repr=False)
    text: dict = field(repr=False)  # the text chunks as read (A1111's EXIF comment as `parameters`)
    meta: dict

    @property
    def size(self):
        return f"{self.width}x{self.height}"

    def image(self):
        from PIL import Image
        return Image.fromarray(self.rgb)


def load(path):
    """Read and decode one image file (load_bytes); ImageError naming the file for anything that is not one."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file" + (" (it is a folder)" if path.is_dir() else ""))
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ImageError(f"{path} is {path.stat().st_size >> 20} MiB, more than the {MAX_FILE_BYTES >> 20} MiB an "
                         "image file may have")
    return load_bytes(path.read_bytes(), str(path))


def load_bytes(data, name):
    """A PNG, JPEG or WebP within MIN_SIDE..MAX_PIXELS: the header is checked before any pixel is decoded (Pillow's
    own decompression-bomb limits and its cap on PNG text chunks apply beneath)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as im:
            width, height = im.size
            if width * height > MAX_PIXELS:
                raise ImageError(f"{name} is {width}x{height} pixels, more than the {MAX_SIDE_PIXELS}x"
                                 f"{MAX_SIDE_PIXELS} ({MAX_PIXELS}) an image compared here may have")
            if min(width, height) < MIN_SIDE:
                raise ImageError(f"{name} is {width}x{height} pixels; both sides must be at least {MIN_SIDE}")
            if im.mode not in MODES:
                raise ImageError(f"{name} is a {im.mode} image; save it with 8 bits a channel (RGB or RGBA)")
            im.load()
            text = _text(im)
            rgb, alpha = flatten(im)
            fmt = im.format
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not a PNG, JPEG or WebP image") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{name} claims more pixels than Pillow's decompression-bomb limit; an image compared here "
                         f"has at most {MAX_SIDE_PIXELS}x{MAX_SIDE_PIXELS}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"{name} does not decode as an image ({clip(exc)})") from None
    return Picture(name, data, fmt, width, height, rgb, alpha, text, metadata(text))


def _text(im):
    """The text an image carries: PNG tEXt/zTXt/iTXt chunks (before and after the pixels), else EXIF UserComment
    as AUTOMATIC1111's `parameters` (its JPEG and WebP files)."""
    text = dict(getattr(im, "text", None) or {}) if im.format == "PNG" else {}
    if not text and im.format in ("JPEG", "WEBP"):
        comment = im.getexif().get_ifd(_USER_COMMENT[0]).get(_USER_COMMENT[1])
        decoded = _user_comment(comment)
        if decoded:
            text["parameters"] = decoded
    return {k: v for k, v in text.items() if isinstance(v, str)}


def _user_comment(value):
    """EXIF UserComment: an 8-byte character code, then the text (UNICODE is UTF-16 big-endian, as piexif writes)."""
    if isinstance(value, str):
        return value.strip("\0 ")
    if not isinstance(value, bytes) or len(value) < 8:
        return ""
    code, body = value[:8], value[8:]
    try:
        if code == b"UNICODE\0":
            return body.decode("utf-16-be").strip("\0 ")
        if code in (b"ASCII\0\0\0", b"\0" * 8):
            return body.decode("utf-8").strip("\0 ")
    except UnicodeDecodeError:
        return ""
    return ""


def flatten(im):
    """(uint8 RGB as compared, uint8 alpha or None): transparency composited over BACKGROUND."""
    from PIL import Image

    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", im.size, BACKGROUND + (255,))
        return np.array(Image.alpha_composite(background, rgba).convert("RGB")), np.array(rgba)[..., 3]
    return np.array(im.convert("RGB")), None


def open_as_compared(path):
    """A stored image file as every measure saw it: a PIL RGB image, transparency over BACKGROUND."""
    from PIL import Image

    with Image.open(path) as im:
        return Image.fromarray(flatten(im)[0])


def check_pair(a, b):
    """Refuse two pictures of different sizes, saying both."""
    if (a.width, a.height) != (b.width, b.height):
        raise ImageError(f"{a.name} is {a.size} and {b.name} is {b.size}: a pair needs two images of the same size")


def alpha_note(a, b):
    """What the comparison did with transparency, or '' when neither image has any."""
    if a.alpha is None and b.alpha is None:
        return ""
    same = a.alpha is not None and b.alpha is not None and np.array_equal(a.alpha, b.alpha)
    return ("transparent pixels compared over white" + ("" if same else "; the two alpha channels differ, and that "
                                                        "difference is part of what is compared"))


def stored_png(picture):
    """The bytes the results file keeps: a PNG as it came (metadata and all), anything else re-encoded losslessly
    as PNG with its A1111 text kept as a `parameters` chunk."""
    if picture.format == "PNG":
        return picture.data
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in picture.text.items():
        info.add_text(key, value)
    buf = io.BytesIO()
    picture.image().save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()
