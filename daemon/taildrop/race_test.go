//go:build race

package taildrop

const raceEnabled = true
