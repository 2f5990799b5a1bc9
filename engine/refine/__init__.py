"""The Refine tab (suite group 7): per-region detailers over the warm Flux model, the
identity guard; detection and masks come from engine/faces/."""
