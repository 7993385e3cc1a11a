"""Command-line tools: semiearth-train, semiearth-eval, semiearth-prepare, semiearth-predict."""
