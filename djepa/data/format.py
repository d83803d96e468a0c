"""What the data modules share: the encoded format's name and the errors a user can fix.

A leaf module (it imports nothing of djepa), so encode, encoded, images and the video reader can all import it
without the circle encode -> images -> encoded -> encode. The old homes re-export these names.
"""
from __future__ import annotations

FORMAT = "djepa-encoded-v1"


class DatasetError(RuntimeError):
    """A dataset (a class-folder tree, a split list, an encoded dataset) that cannot be used; the message names the
    file and the fix."""


class BadImageError(ValueError):
    """An image or video that cannot be decoded, with data.on_bad_image=fail (a user error: the job exits 2 naming
    it)."""

    @classmethod
    def of(cls, bad: list[str], what: str = "image") -> "BadImageError":
        """From records "path<TAB>why" (the first one named, the others counted); `what`: image or video."""
        path, why = bad[0].split("\t", 1)
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        return cls(f"unreadable {what} {path} ({why}){more}. Remove it, or set data.on_bad_image=skip to skip "
                   f"and count such files")
