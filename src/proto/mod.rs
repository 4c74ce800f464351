//! Sans-IO protocol machines (spec §3–§6).
