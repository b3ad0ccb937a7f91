package key

// The protocol gives each key its own text prefix; typed wrappers keep a node key from
// being used where a machine key belongs.

// MachinePrivate is the device's long-term identity (the Noise static key for control).
type MachinePrivate struct{ k Raw }

// MachinePublic is the public half of a machine key ("mkey:").
type MachinePublic struct{ k Raw }

// NodePrivate is the WireGuard key, also the DERP identity.
type NodePrivate struct{ k Raw }

// NodePublic is the public half of a node key ("nodekey:").
type NodePublic struct{ k Raw }

// DiscoPrivate is the per-process key for disco messages.
type DiscoPrivate struct{ k Raw }

// DiscoPublic is the public half of a disco key ("discokey:").
type DiscoPublic struct{ k Raw }

// ChallengePublic is the per-connection key in the server's early Noise payload ("chalpub:").
type ChallengePublic struct{ k Raw }

// NLPublic is a tailnet-lock key ("nlpub:"); we only ever send the zero value.
type NLPublic struct{ k Raw }

const (
	privPrefix  = "privkey:"
	mkeyPrefix  = "mkey:"
	nodePrefix  = "nodekey:"
	discoPrefix = "discokey:"
	chalPrefix  = "chalpub:"
	nlPrefix    = "nlpub:"
)

func NewMachine() MachinePrivate { return MachinePrivate{newPrivate()} }
func NewNode() NodePrivate       { return NodePrivate{newPrivate()} }
func NewDisco() DiscoPrivate     { return DiscoPrivate{newPrivate()} }

func (p MachinePrivate) Public() MachinePublic { return MachinePublic{public(p.k)} }
func (p NodePrivate) Public() NodePublic       { return NodePublic{public(p.k)} }
func (p DiscoPrivate) Public() DiscoPublic     { return DiscoPublic{public(p.k)} }

func (p MachinePrivate) Raw() Raw { return p.k }
func (p NodePrivate) Raw() Raw    { return p.k }
func (p DiscoPrivate) Raw() Raw   { return p.k }
func (k MachinePublic) Raw() Raw  { return k.k }
func (k NodePublic) Raw() Raw     { return k.k }
func (k DiscoPublic) Raw() Raw    { return k.k }

func (p MachinePrivate) IsZero() bool { return p.k.IsZero() }
func (p NodePrivate) IsZero() bool    { return p.k.IsZero() }
func (k MachinePublic) IsZero() bool  { return k.k.IsZero() }
func (k NodePublic) IsZero() bool     { return k.k.IsZero() }
func (k DiscoPublic) IsZero() bool    { return k.k.IsZero() }

// MachinePublicFromRaw wraps raw bytes, e.g. a key read off the wire.
func MachinePublicFromRaw(r Raw) MachinePublic { return MachinePublic{r} }
func NodePublicFromRaw(r Raw) NodePublic       { return NodePublic{r} }
func DiscoPublicFromRaw(r Raw) DiscoPublic     { return DiscoPublic{r} }

func (p MachinePrivate) MarshalText() ([]byte, error) { return appendText(privPrefix, p.k), nil }
func (p *MachinePrivate) UnmarshalText(b []byte) (err error) {
	p.k, err = parseText(privPrefix, b)
	return err
}
func (p NodePrivate) MarshalText() ([]byte, error) { return appendText(privPrefix, p.k), nil }
func (p *NodePrivate) UnmarshalText(b []byte) (err error) {
	p.k, err = parseText(privPrefix, b)
	return err
}
func (k MachinePublic) MarshalText() ([]byte, error) { return appendText(mkeyPrefix, k.k), nil }
func (k *MachinePublic) UnmarshalText(b []byte) (err error) {
	k.k, err = parseText(mkeyPrefix, b)
	return err
}
func (k NodePublic) MarshalText() ([]byte, error) { return appendText(nodePrefix, k.k), nil }
func (k *NodePublic) UnmarshalText(b []byte) (err error) {
	k.k, err = parseText(nodePrefix, b)
	return err
}
func (k DiscoPublic) MarshalText() ([]byte, error) { return appendText(discoPrefix, k.k), nil }
func (k *DiscoPublic) UnmarshalText(b []byte) (err error) {
	k.k, err = parseText(discoPrefix, b)
	return err
}
func (k ChallengePublic) MarshalText() ([]byte, error) { return appendText(chalPrefix, k.k), nil }
func (k *ChallengePublic) UnmarshalText(b []byte) (err error) {
	k.k, err = parseText(chalPrefix, b)
	return err
}
func (k NLPublic) MarshalText() ([]byte, error) { return appendText(nlPrefix, k.k), nil }
func (k *NLPublic) UnmarshalText(b []byte) (err error) {
	k.k, err = parseText(nlPrefix, b)
	return err
}

func (k MachinePublic) String() string { b, _ := k.MarshalText(); return string(b) }
func (k NodePublic) String() string    { b, _ := k.MarshalText(); return string(b) }
func (k DiscoPublic) String() string   { b, _ := k.MarshalText(); return string(b) }

// ShortString is a short form for logs and status output.
func (k NodePublic) ShortString() string {
	s := k.String()
	return "[" + s[len(nodePrefix):len(nodePrefix)+6] + "]"
}
