"""What every layer shares: errors, paths, lab state and profiles, units, waits and the phase engine."""
