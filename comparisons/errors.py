"""Every error a user can cause, in one place, and `clip` for quoting their input in a message.

Each type's message says what to change. The app shows exactly these (ui/errors.py); the CLI prints them as
one line with exit 2. Nothing here imports the rest of the project.
"""

import re

ECHO = 80  # an error message quotes at most this many characters of what was sent
# What a terminal would act on rather than show: C0 controls but tab and newline, DEL, C1 controls (CSI, OSC, ...)
# and the bidirectional overrides that reorder what is read. Names, metadata and cells come from files.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def clip(text, limit=ECHO):
    """`text` for an error message: at most `limit` characters, marked when cut."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def printable(text):
    """`text` as a terminal shows it without obeying it: every control character written out as an escape
    (ESC as '\\x1b', a right-to-left override as '\\u202e'), tabs and line breaks kept."""
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}",
                            str(text))


class ConfigError(ValueError):
    """A configuration a user wrote that cannot run. `field`, where one field is at fault: its form name ('seed',
    'steps', 'guidance', 'prompt', 'pairing', 'model'; 'A:steps' for a custom panel's field, 'A' for the panel),
    which the app marks."""
    field = None


def at_field(exc, field):
    """`exc` with the form field at fault (ConfigError.field); returned, for `raise at_field(...)`."""
    exc.field = field
    return exc


class UsageError(ValueError):
    """Bad textual settings (command-line flags, the app's study fields)."""


class InputError(ValueError):
    """Input over a limit (text length, hosted caps)."""


class RateLimited(ValueError):
    """Too many requests from one address; the message says how long to wait."""


class StoreError(RuntimeError):
    """The results file cannot be used."""


class DuplicateVote(ValueError):
    """This session already voted on this pair."""


class VoteRefused(ValueError):
    """A vote on a pair that was not served to the voter's session; nothing is written."""


class CampaignError(ValueError):
    """A campaign request that cannot be met (unknown study, cell or campaign, empty selection, bad bundle)."""


class ImageError(ValueError):
    """An image file, folder or manifest that cannot be compared (unreadable, over a limit, sizes that differ,
    names that do not pair); the message names the file."""


class RayUnavailable(ValueError):
    """The Ray cluster cannot be reached or used."""
