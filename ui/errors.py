"""The project's own exceptions a user's input can cause, shown as a message that says what to change."""
import gradio as gr

from comparisons.errors import (
    CampaignError,
    ConfigError,
    ImageError,
    InputError,
    RateLimited,
    StoreError,
    UsageError,
    VoteRefused,
    clip,
)
from sampler_lib.models import PromptError

# Only these become messages: any other exception is a bug and shows as one (logged with its traceback).
USER_ERRORS = (ConfigError, InputError, RateLimited, PromptError, StoreError, VoteRefused, UsageError, CampaignError,
               ImageError)


def user_error(exc):
    """A gr.Error with the message a user can act on (never more than a few lines), and `field`: the form field at
    fault where one is (ConfigError.field; the prompt for a prompt the model refuses)."""
    err = gr.Error(clip(str(exc), 400), print_exception=False)
    err.field = getattr(exc, "field", None) or ("prompt" if isinstance(exc, PromptError) or
                                                str(exc).startswith("the prompt ") else None)
    return err


def run_checked(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except USER_ERRORS as exc:
        raise user_error(exc) from exc
