// systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram of newline-separated
// VAR=VALUE assignments ("READY=1", "WATCHDOG=1", "STATUS=...") sent to the unix socket named by
// $NOTIFY_SOCKET. The service manager sets that variable for Type=notify units; elsewhere it is
// unset and notifying is a no-op, so callers need no "am I under systemd?" branch.
#pragma once
#include <string>

namespace edgellm {

// Sends `state` to `socket_path`: an absolute filesystem path, or an abstract-namespace name
// written with a leading '@' (the '@' becomes the leading NUL of the address).
// Returns 1 when sent, 0 when socket_path is empty, or -errno (EINVAL for a name that is neither
// absolute nor abstract, or too long for sockaddr_un).
int sd_notify_to(const std::string& socket_path, const std::string& state);

// sd_notify_to($NOTIFY_SOCKET, state); 0 when the variable is unset or empty.
int sd_notify(const std::string& state);

}  // namespace edgellm
