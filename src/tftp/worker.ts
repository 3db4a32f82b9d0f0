/**
 * A TFTP transfer worker thread: runs the transfers the server's thread hands it (each with its
 * own socket, see TransferHost in transfer.ts) and reports how they ended. Started by WorkerPool
 * in server.ts with the transfer settings as its workerData.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { TransferHost, type TransferSettings } from './transfer.ts';
import type { FromWorker, ToWorker } from './worker-protocol.ts';

const port = parentPort;
if (port === null) throw new Error('src/tftp/worker.ts runs as a worker thread only');

const post = (message: FromWorker) => port.postMessage(message);
const host = new TransferHost(workerData as TransferSettings, {
  ended: (id, line) => post({ type: 'ended', id, line }),
  refused: (id, error) => post({ type: 'refused', id, code: error.code, message: error.message }),
});

port.on('message', (message: ToWorker) => {
  switch (message.type) {
    case 'start':
      host.start(message.id, message.spec);
      break;
    case 'repeat':
      post({ type: 'repeated', id: message.id, answered: host.repeat(message.id) });
      break;
    case 'stop':
      host.stop(message.id, message.reason);
      break;
    case 'close':
      void host.stopAll(message.reason).then(() => post({ type: 'closed' }));
      break;
  }
});
post({ type: 'ready' });
