#include "server_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

namespace seqkv::test {
namespace {

using Clock = std::chrono::steady_clock;

int RemainingMs(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

}  // namespace

Result<std::unique_ptr<ServerProcess>> ServerProcess::Start(const ServerProcessOptions& options) {
  std::string binary = options.binary;
#ifdef SEQKV_SERVER_BIN
  if (binary.empty()) binary = SEQKV_SERVER_BIN;
#endif
  if (binary.empty()) return InvalidArgument("no seqkv-server binary");
  if (options.data_dir.empty()) return InvalidArgument("data_dir is required");
  std::unique_ptr<ServerProcess> p(new ServerProcess());
  p->log_path_ = options.data_dir + ".log";

  std::vector<std::string> args = {binary, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
                                   "--data-dir", options.data_dir};
  args.insert(args.end(), options.extra_args.begin(), options.extra_args.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  int fds[2];
  if (pipe(fds) != 0) return Internal("pipe failed");
  pid_t pid = fork();
  if (pid < 0) return Internal("fork failed");
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    int log = open(p->log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (log >= 0) dup2(log, STDERR_FILENO);
    close(fds[0]);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(fds[1]);
  p->pid_ = pid;
  p->stdout_fd_ = fds[0];

  // Read stdout until both ready lines arrived (or timeout / exit).
  const Clock::time_point deadline = Clock::now() + options.start_timeout;
  std::string buffer;
  while (p->address_.empty() || p->metrics_address_.empty()) {
    pollfd pfd{p->stdout_fd_, POLLIN, 0};
    int ready = poll(&pfd, 1, RemainingMs(deadline));
    if (ready <= 0) return Status(StatusCode::kDeadlineExceeded, "seqkv-server did not report its address in time");
    char chunk[512];
    ssize_t n = read(p->stdout_fd_, chunk, sizeof chunk);
    if (n <= 0) return Unavailable("seqkv-server exited during start-up: " + p->LogTail());
    buffer.append(chunk, static_cast<size_t>(n));
    size_t eol;
    while ((eol = buffer.find('\n')) != std::string::npos) {
      std::string line = buffer.substr(0, eol);
      buffer.erase(0, eol + 1);
      if (line.rfind("listening on ", 0) == 0) p->address_ = line.substr(13);
      if (line.rfind("metrics on ", 0) == 0) p->metrics_address_ = line.substr(11);
    }
  }
  return p;
}

ServerProcess::~ServerProcess() {
  Kill();
  if (stdout_fd_ >= 0) close(stdout_fd_);
}

bool ServerProcess::Reap(std::chrono::milliseconds timeout, int* exit_code) {
  const Clock::time_point deadline = Clock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      pid_ = -1;
      return true;
    }
    if (r < 0 || Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

Result<int> ServerProcess::Stop(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return FailedPrecondition("server not running");
  kill(pid_, SIGTERM);
  int code = 0;
  if (!Reap(timeout, &code)) {
    Kill();
    return Status(StatusCode::kDeadlineExceeded, "seqkv-server did not stop within the timeout");
  }
  return code;
}

void ServerProcess::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int code = 0;
  Reap(std::chrono::milliseconds(10'000), &code);
}

std::string ServerProcess::LogTail(size_t bytes) const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string all = ss.str();
  return all.size() > bytes ? all.substr(all.size() - bytes) : all;
}

Result<std::unique_ptr<client::Client>> ServerProcess::Connect(client::ClientOptions options) const {
  options.address = address_;
  return client::Client::Connect(options);
}

Result<std::string> HttpGet(const std::string& host_port, const std::string& path) {
  size_t colon = host_port.rfind(':');
  if (colon == std::string::npos) return InvalidArgument("HttpGet: address must be host:port");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::atoi(host_port.c_str() + colon + 1)));
  if (inet_pton(AF_INET, host_port.substr(0, colon).c_str(), &addr.sin_addr) != 1) {
    return InvalidArgument("HttpGet: bad IPv4 address");
  }
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return Internal("socket failed");
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return Unavailable("HttpGet: cannot connect to " + host_port);
  }
  std::string request = "GET " + path + " HTTP/1.0\r\nHost: " + host_port + "\r\nConnection: close\r\n\r\n";
  if (send(fd, request.data(), request.size(), 0) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return Unavailable("HttpGet: send failed");
  }
  std::string response;
  char buf[8192];
  for (int i = 0; i < 100000; ++i) {  // bounded: at most ~800 MB
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    response.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  size_t body = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.", 0) != 0 || body == std::string::npos) return Unavailable("HttpGet: bad response");
  if (response.find(" 200 ") > response.find("\r\n")) return Unavailable("HttpGet: " + response.substr(0, 40));
  return response.substr(body + 4);
}

double MetricValue(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(series, 0) == 0 && line.size() > series.size() && line[series.size()] == ' ') {
      return std::atof(line.c_str() + series.size() + 1);
    }
  }
  return -1;
}

}  // namespace seqkv::test
