package tcos

// The files and PINs of the keyquorum-mf profile ([KeyquorumMF]) and the limits every profile
// shares. OpenSC documents the TCOS system files (MF 3F00, EF_GDO 2F02 with the serial) [V]; the
// two data slots below are Keyquorum's own choice [U]: a card has to be prepared with them
// (two transparent EFs whose READ and UPDATE access rules require the slot's local PIN).
const (
	// FileMF is the master file.
	FileMF uint16 = 0x3F00
	// FileGDO is EF_GDO, whose tag 5A holds the card's serial number [V].
	FileGDO uint16 = 0x2F02
	// FileShare holds the Backup Key share record, behind PIN PINRefShare.
	FileShare uint16 = 0x4B01
	// FileUser holds the PKCS#11 slot user credential, behind PIN PINRefUser.
	FileUser uint16 = 0x4B02
	// PINRefShare and PINRefUser are local PINs 1 and 2 of the MF (0x80|n) [U: layout].
	PINRefShare byte = 0x81
	PINRefUser  byte = 0x82
	// SlotFileSize is the size of each slot file: a 2-byte length prefix and up to
	// SlotFileSize-2 bytes of data.
	SlotFileSize = 1024
	// MaxData is the most a slot can hold.
	MaxData = SlotFileSize - 2
	// MinPINDigits and MaxPINDigits bound a PIN: NetKey PINs have at least 6 digits [V];
	// 15 at most keeps within what pads take [I].
	MinPINDigits = 6
	MaxPINDigits = 15
	// MaxTries is the PIN retry counter's start value: a PIN blocks after 3 wrong entries.
	MaxTries = 3
	// maxChunk is the most data one short READ/UPDATE BINARY carries here.
	maxChunk = 255
)
