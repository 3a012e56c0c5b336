"""What the build host and the device runner agree on: result schemas, statistics and the maths of
"does this artifact compute what PyTorch computed". Standard library and numpy only (it ships to the
device inside the runner bundle); imported by both sides, so they cannot drift apart."""

RUNNER_VERSION = "1"
PROFILE_SCHEMA = "edgeslm.profile/1"
PROBE_SCHEMA = "edgeslm.probe/1"
NOISY_CV = 0.10  # coefficient of variation above which a latency run is flagged noisy
