//go:build !race

package ts2021

const raceEnabled = false
