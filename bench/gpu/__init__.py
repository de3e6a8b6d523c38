"""The prepared GPU run (`bench/gpu/run.sh`): what a bare GPU machine measures in one go. See docs/engines.md."""
