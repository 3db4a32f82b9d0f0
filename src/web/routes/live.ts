/** (Being written.) */
import type { FastifyInstance } from 'fastify';
import type { WebContext } from '../context.ts';

export function registerLiveRoutes(_app: FastifyInstance, _ctx: WebContext): void {}
