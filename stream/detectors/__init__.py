"""Pure detectors: events and time in, state and alert signals out."""
