//go:build !race

package taildrop

const raceEnabled = false
