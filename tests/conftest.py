"""Hypothesis budgets: profile "ci" (the default) keeps the suite fast; HYPOTHESIS_PROFILE=fuzz
runs 5000 examples per property. Tests that set max_examples themselves keep theirs."""

import os

from hypothesis import settings

settings.register_profile("ci", max_examples=100, deadline=None)
settings.register_profile("fuzz", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
