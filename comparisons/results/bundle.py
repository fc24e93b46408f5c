"""The campaign bundle, a zip any results file can import: campaign.json (definition and pairs) and
images/<sha256>.png exactly as stored. Reading checks every entry before anything is handed back."""
import hashlib
import json
import re
import zipfile
from pathlib import PurePosixPath

from ..core.config import SamplerConfig
from ..errors import CampaignError, clip
from ..files import replacing

FORMAT, VERSION = "ab-lab-campaign", 1
PAIR_FIELDS = ("pair_id", "created", "pairing", "model", "prompt", "seed", "config_a", "config_b", "lpips", "psnr",
               "ssim", "max_abs_diff", "lpips_a_ref", "lpips_b_ref", "sigmas_a", "sigmas_b", "lockstep", "seconds")
OPTIONAL_FIELDS = ("flip_max",)  # absent from bundles written before FLIP decided visibility
IMAGE_NAME = re.compile(r"images/[0-9a-f]{64}\.png")
MAX_BUNDLE_BYTES = 4 << 30  # uncompressed; a bundle claiming more is refused before anything is read


def image_name(data):
    """The name a PNG's bytes have in a bundle: images/<sha256>.png."""
    return f"images/{hashlib.sha256(data).hexdigest()}.png"


def write_bundle(out, definition, pairs, images):
    """Write the zip whole or not at all: campaign.json and every image (arcname -> PNG bytes)."""
    with replacing(out) as (tmp,), zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("campaign.json", json.dumps({"definition": definition, "pairs": pairs}, indent=1))
        for arcname, data in sorted(images.items()):
            z.writestr(arcname, data)


def read_bundle(path):
    """Everything in a bundle, checked before anything is written: (definition, pairs, {arcname: bytes})."""
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CampaignError(f"{path} is not a campaign bundle (not a readable zip: {exc})") from None
    with z:
        infos = z.infolist()
        if sum(i.file_size for i in infos) > MAX_BUNDLE_BYTES:
            raise CampaignError(f"{path} unpacks to more than {MAX_BUNDLE_BYTES >> 30} GiB; refused")
        for info in infos:
            name = info.filename
            parts = PurePosixPath(name).parts
            if name.startswith(("/", "\\")) or "\\" in name or ".." in parts or ":" in name:
                raise CampaignError(f"{path} holds a path that escapes the bundle ({clip(repr(name))}); refused")
            if name != "campaign.json" and not IMAGE_NAME.fullmatch(name):
                raise CampaignError(f"{path} holds an unexpected entry {clip(repr(name))}; not a campaign bundle")
        try:
            manifest = json.loads(z.read("campaign.json"))
            definition, pairs = manifest["definition"], manifest["pairs"]
        except KeyError:
            raise CampaignError(f"{path} has no campaign.json; not a campaign bundle") from None
        except (ValueError, TypeError) as exc:
            raise CampaignError(f"{path}: campaign.json is not valid ({clip(exc)})") from None
        if not isinstance(definition, dict) or definition.get("format") != FORMAT:
            raise CampaignError(f"{path} is not an {FORMAT} bundle (format {clip(repr(definition.get('format')))})"
                                if isinstance(definition, dict) else f"{path}: campaign.json has no definition")
        if definition.get("version") != VERSION:
            raise CampaignError(f"{path} is a version {definition.get('version')!r} bundle; this app reads "
                                f"version {VERSION}")
        images = {}
        try:
            for p in pairs:
                SamplerConfig.from_json(p["config_a"]), SamplerConfig.from_json(p["config_b"])
                missing = [k for k in (*PAIR_FIELDS, "question", "sampler", "steps") if k not in p]
                if missing:
                    raise CampaignError(f"{path}: a pair lacks {', '.join(missing)}")
                for side in ("image_a", "image_b"):
                    arcname = p[side]
                    if not isinstance(arcname, str) or not IMAGE_NAME.fullmatch(arcname):
                        raise CampaignError(f"{path}: pair {clip(p['pair_id'])} names a bad image {clip(arcname)}")
                    if arcname not in images:
                        try:
                            data = z.read(arcname)
                        except KeyError:
                            raise CampaignError(f"{path} is missing {arcname}") from None
                        if image_name(data) != arcname:
                            raise CampaignError(f"{path}: {arcname} is corrupt (its content does not match its name)")
                        images[arcname] = data
        except (TypeError, AttributeError) as exc:
            raise CampaignError(f"{path}: campaign.json is not valid ({clip(exc)})") from None
        if not pairs:
            raise CampaignError(f"{path} holds no pairs")
        return definition, pairs, images
