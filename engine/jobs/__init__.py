"""The jobs, one module each, top to bottom: plan, decode, write, commit (`realtime`, `batch`, `labels`, `merge`),
and the run lifecycle they share (`run`)."""
