"""Runs `wshubctl top` on a pseudo-terminal, waits until the view shows
WANT, presses KEY, and checks that the program exits 0 having left the
alternate screen (the terminal restored). Prints the last screen's text.

Usage: top.py WSHUBCTL ADMIN_ADDR WANT KEY"""

import fcntl
import os
import pty
import re
import select
import struct
import sys
import termios
import time

wshubctl, addr, want, key = sys.argv[1:5]
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(sys.stdout.fileno(), termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    os.execv(wshubctl, [wshubctl, "--addr", addr, "top", "--interval", "200ms"])

output = b""


def read_for(seconds, until=None):
    global output
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return False
            if not chunk:
                return False
            output += chunk
            if until and until(output):
                return True
    return False


if not read_for(10, lambda o: want.encode() in o):
    sys.exit(f"the view never showed {want!r}; saw {output[-2000:]!r}")
os.write(fd, key.encode())
read_for(5)
_, status = os.waitpid(pid, 0)
if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
    sys.exit(f"wshubctl top ended with status {status}")
entered, left = output.find(b"\x1b[?1049h"), output.rfind(b"\x1b[?1049l")
if entered < 0 or left < entered:
    sys.exit("the alternate screen was not entered and left")
text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b" ", output).decode("utf-8", "replace")
print(" ".join(text.split())[-3000:])
