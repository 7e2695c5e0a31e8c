// `sluice demo`: three in-process demo backends that say who they are, and the gateway in front
// of them, so a newcomer sees round robin at work with curl in the first minute.
#pragma once

namespace sluice::demo {

// Runs until SIGINT/SIGTERM; returns the exit code.
int run_demo(int port, int workers);

}  // namespace sluice::demo
