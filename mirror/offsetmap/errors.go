package offsetmap

import "errors"

// Sentinel errors. Every error the package returns wraps one of them, with
// the offsets involved in its message; test with errors.Is.
var (
	// ErrBeforeMirrored: the source offset is below the first offset the
	// map covers — before the mirror started, or trimmed by TrimBefore
	// after the source's retention removed it.
	ErrBeforeMirrored = errors.New("source offset before the mirrored range")

	// ErrBeyondMirrored: the source offset is above Next, so the mirror has
	// not dealt with it yet. A committed group offset there is reported,
	// never guessed.
	ErrBeyondMirrored = errors.New("source offset beyond the mirrored position")

	// ErrLost: the records a source position names next were deleted on
	// the source (retention, DeleteRecords) before the mirror copied them
	// (Map.SkipLost). Map.Resume says where such a position resumes.
	ErrLost = errors.New("source records deleted before they were mirrored")

	// ErrNotIncreasing: Record, AppendRange or Advance was given an offset
	// that does not move forward.
	ErrNotIncreasing = errors.New("offsets must increase")

	// ErrInvalidOffset: a negative offset, or one so large that the next
	// offset would overflow int64.
	ErrInvalidOffset = errors.New("invalid offset")

	// ErrCorrupt: bytes given to UnmarshalBinary, DecodeKey or DecodeValue
	// are not a valid encoding.
	ErrCorrupt = errors.New("corrupt offset map encoding")
)
