// A Node HTTP server as most are written: listen(PORT) with no host binds
// [::]:PORT (dual-stack). On SIGTERM it stops accepting and exits once its
// connections have ended. rpwrap runs it with --pass bind.
//
//   node server.js PORT
const http = require('http');

const server = http.createServer((req, res) => {
  res.end('ok\n');
});
server.listen(Number(process.argv[2]));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
