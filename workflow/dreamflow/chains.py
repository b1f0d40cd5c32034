"""Which dreamed frame each frame starts from: chains cut at scene cuts and into overlapping
segments.

A video whose frames blend is a set of chains: frame N starts from the dream of N-1 of its own
chain. A chain starts at frame 1, at every scene cut, and, with `max_chain`, every
max_chain - overlap frames of a long scene: a new segment starts `overlap` frames before the
previous one ends, so those frames are dreamed twice, once by each segment, and the output
crossfades from the old segment's dream to the new one's. Chains do not wait for each other,
so they run side by side.

A *node* is one dream of one frame: (number, lead). lead is True for the new segment's dream of
a frame in an overlap; the old segment's dream of it, and every other dream, has lead False.
Imports nothing heavy: the plan builds these while Snakemake builds its DAG.
"""

from dataclasses import dataclass

from .frames import FRAME_PATTERN, frame_name

LEAD_SUFFIX = "-lead"
NODE_PATTERN = rf"{FRAME_PATTERN}(?:{LEAD_SUFFIX})?"  # a node's file stem, a Snakemake wildcard


@dataclass(frozen=True)
class Segment:
    """Frames first..last (inclusive) dreamed as one chain; its first `lead` frames overlap the
    segment before it."""

    first: int
    last: int
    lead: int = 0


def segments(count, cuts=(), max_chain=None, overlap=0):
    """The segments of `count` frames: scenes start at 1 and at each cut; a scene longer than
    max_chain is split so that consecutive segments share `overlap` frames."""
    if max_chain is not None and max_chain <= 2 * overlap:
        raise ValueError(f"max_chain ({max_chain}) must be more than twice overlap ({overlap})")
    starts = sorted({1, *(cut for cut in cuts if 1 < cut <= count)})
    ends = [start - 1 for start in starts[1:]] + [count]
    result = []
    for scene_first, scene_last in zip(starts, ends, strict=True):
        first, lead = scene_first, 0
        while True:
            last = scene_last if max_chain is None else min(scene_last, first + max_chain - 1)
            result.append(Segment(first, last, lead))
            if last == scene_last:
                break
            first, lead = last - overlap + 1, overlap
    return result


def node_name(number, lead=False):
    """The file stem of a node: 000123, or 000123-lead for a new segment's dream of an overlap
    frame."""
    return frame_name(number) + (LEAD_SUFFIX if lead else "")


def parse_node(name):
    """(number, lead) of a node's file stem."""
    lead = name.endswith(LEAD_SUFFIX)
    return int(name[: -len(LEAD_SUFFIX)] if lead else name), lead


class Chains:
    """The chains of one input: each node's predecessor, and the frames that crossfade."""

    def __init__(self, count, cuts=(), max_chain=None, overlap=0):
        self.count = count
        self.segments = segments(count, cuts, max_chain, overlap)
        self._previous = {}
        self._lead_weights = {}  # overlap frame -> share of the new segment's dream in the output
        for segment in self.segments:
            for number in range(segment.first, segment.last + 1):
                lead = number < segment.first + segment.lead
                if lead:
                    self._lead_weights[number] = (number - segment.first + 1) / (segment.lead + 1)
                if number == segment.first:
                    self._previous[(number, lead)] = None
                else:
                    before_lead = number - 1 < segment.first + segment.lead
                    self._previous[(number, lead)] = (number - 1, before_lead)

    @property
    def scene_starts(self):
        return [segment.first for segment in self.segments if not segment.lead]

    @property
    def seams(self):
        """Overlap frames, in order: their output is a crossfade of two dreams."""
        return sorted(self._lead_weights)

    def nodes(self):
        return list(self._previous)

    def previous(self, number, lead=False):
        """The node that node (number, lead) starts from, or None at the start of a chain."""
        return self._previous[(number, lead)]

    def lead_weight(self, number):
        """The new segment's share in the crossfaded output of overlap frame `number`."""
        return self._lead_weights[number]


def ranges_text(numbers):
    """Sorted frame numbers as compact text: [3, 4, 5, 9] -> "3-5,9"."""
    parts = []
    for number in numbers:
        if parts and parts[-1][1] == number - 1:
            parts[-1][1] = number
        else:
            parts.append([number, number])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in parts)


def parse_ranges(text):
    """The inverse of ranges_text."""
    numbers = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        numbers.extend(range(int(first), int(last or first) + 1))
    return numbers
