/** The TFTP library: a read-only server (src/tftp/server.ts) and a small client. */
export { startTftpServer, type TftpServer, type TftpServerOptions } from './server.ts';
export { tftpGet, TftpClientError, type TftpGetOptions, type TftpGetResult } from './client.ts';
