#include "sys/sd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace edgellm {

int sd_notify_to(const std::string& socket_path, const std::string& state) {
  if (socket_path.empty()) return 0;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const bool abstract = socket_path[0] == '@';
  if (!abstract && socket_path[0] != '/') return -EINVAL;
  // A filesystem path needs its terminating NUL inside sun_path; an abstract name does not.
  if (socket_path.size() > sizeof(addr.sun_path) - (abstract ? 0 : 1)) return -EINVAL;
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
  if (abstract) addr.sun_path[0] = '\0';
  // Abstract names are exactly as long as given (trailing NULs would be part of the name).
  const socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket_path.size() +
                                               (abstract ? 0 : 1));

  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  ssize_t sent;
  do {
    sent = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr), len);
  } while (sent < 0 && errno == EINTR);
  const int err = sent < 0 ? errno : 0;
  ::close(fd);
  if (err != 0) return -err;
  return static_cast<size_t>(sent) == state.size() ? 1 : -EMSGSIZE;
}

int sd_notify(const std::string& state) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  return sd_notify_to(path ? path : "", state);
}

}  // namespace edgellm
