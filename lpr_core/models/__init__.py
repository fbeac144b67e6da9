"""Models: the product detector, the RICE clip/image encoder (backbone, temporal aggregator,
PMD/PFR heads) and its losses."""
