"""Command-line tools: semiearth-train, semiearth-eval, semiearth-prepare, semiearth-predict."""

WEIGHTS_HELP = (  # --weights of semiearth-eval and semiearth-predict (semiearth/train/checkpoint.py)
    "the network to use: a name the checkpoint's method offers (FixMatch, Mean Teacher, UniMatch V2, "
    "supervised: teacher, student; CPS: student_a, student_b, mean); default: the method's own choice"
)
