//go:build !tollgate_planted

package node

// Release builds: no planted bug can be enabled. planted is a constant false,
// so the compiler removes every branch that tests it.

// PlantedBug names the planted bug this build runs with ("" always here).
const PlantedBug = ""

func planted(string) bool { return false }
