"""A cached image answers only for the sigmas it was sampled on: a schedule whose values changed (Align Your Steps
to ComfyUI's digits) keys its references and arm outputs anew, every other config keeps the key it had."""
import hashlib
import json
from types import SimpleNamespace

from comparisons.core.config import SamplerConfig
from comparisons.core.references import arm_key, reference_key


def old_key(*parts):
    """The keys as stored before schedule revisions existed."""
    return hashlib.sha256(json.dumps(list(parts)).encode()).hexdigest()[:32]


SAMPLE = SimpleNamespace(prompt="a red circle", seed=7)


def test_configs_whose_schedule_never_changed_keep_their_stored_keys():
    for cfg in (SamplerConfig(), SamplerConfig(schedule="beta", steps=10), SamplerConfig(sampler="heun", steps=200)):
        assert reference_key("embedded", SAMPLE, cfg, "fp32") == old_key("embedded", "a red circle", 7, cfg.to_json(),
                                                                          "fp32")
        assert arm_key("embedded", SAMPLE, cfg, "fp32", None) == old_key("embedded", "a red circle", 7, cfg.to_json(),
                                                                         "fp32", None)


def test_align_your_steps_images_of_the_three_decimal_tables_are_not_reused():
    cfg = SamplerConfig(schedule="align_your_steps", steps=10)
    assert reference_key("embedded", SAMPLE, cfg, "fp32") != old_key("embedded", "a red circle", 7, cfg.to_json(),
                                                                      "fp32")
    assert arm_key("embedded", SAMPLE, cfg, "fp32", None) != old_key("embedded", "a red circle", 7, cfg.to_json(),
                                                                      "fp32", None)
