"""Which dream requests may run at once in the server.

Requests with the same torch thread count are dreamed concurrently (torch.set_num_threads is per
thread for the intra-op pool, so each gets its own OpenMP team); a request with another count waits
until those finish, because concurrent dreams with different thread counts were measured to leak
one's numerics into the other.
"""

import collections
import contextlib
import threading


class ThreadGate:
    """Lets requests with the same thread count run together, others in turn, first come first."""

    def __init__(self):
        self._condition = threading.Condition()
        self._threads = None  # the count of the requests running now
        self.running = 0
        self._queue = collections.deque()

    def _may_enter(self, ticket, threads):
        if self.running and self._threads != threads:
            return False
        for waiting, count in self._queue:  # nobody with another count arrived before this one
            if waiting is ticket:
                return True
            if count != threads:
                return False
        return False

    @contextlib.contextmanager
    def held(self, threads):
        ticket = object()
        with self._condition:
            self._queue.append((ticket, threads))
            self._condition.wait_for(lambda: self._may_enter(ticket, threads))
            self._queue.remove((ticket, threads))
            self._threads = threads
            self.running += 1
            self._condition.notify_all()
        try:
            yield
        finally:
            with self._condition:
                self.running -= 1
                if not self.running:
                    self._threads = None
                self._condition.notify_all()
