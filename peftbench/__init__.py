"""peftbench: the logic behind the Snakemake workflow (rules call it through scripts/)."""
