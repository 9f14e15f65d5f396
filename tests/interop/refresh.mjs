// Refresh and revocation through oauth4webapi: the refresh grant with private_key_jwt and the
// DPoP key the refresh token is bound to (nonce retry), rotation, then RFC 7009 revocation of
// the new refresh token, after which it is refused. Env: ISSUER, CLIENT_ID, CLIENT_JWK,
// DPOP_JWK (private), REFRESH_TOKEN.
import * as oauth from 'oauth4webapi'
import * as jose from 'jose'

const issuer = new URL(process.env.ISSUER)
const insecure = { [oauth.allowInsecureRequests]: true }
const jwk = JSON.parse(process.env.CLIENT_JWK)
const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, insecure))
const client = { client_id: process.env.CLIENT_ID }
const clientAuth = oauth.PrivateKeyJwt({ key: await jose.importJWK(jwk, jwk.alg), kid: jwk.kid })

const dpopJwk = JSON.parse(process.env.DPOP_JWK)
const { d, ...publicJwk } = dpopJwk
const keyPair = {
  privateKey: await jose.importJWK(dpopJwk, 'ES256'),
  publicKey: await jose.importJWK(publicJwk, 'ES256', { extractable: true }),
}
const DPoP = oauth.DPoP(client, keyPair)

async function refresh(token) {
  for (let attempt = 0; ; attempt++) {
    try {
      const response = await oauth.refreshTokenGrantRequest(as, client, clientAuth, token, { ...insecure, DPoP })
      return await oauth.processRefreshTokenResponse(as, client, response)
    } catch (err) {
      if (attempt === 0 && oauth.isDPoPNonceError(err)) continue
      throw err
    }
  }
}

const first = await refresh(process.env.REFRESH_TOKEN)
if (!first.refresh_token || first.refresh_token === process.env.REFRESH_TOKEN) throw new Error('no rotation')
if (typeof first.rt_expires_in !== 'number') throw new Error('rt_expires_in')
if (first.token_type.toLowerCase() !== 'dpop') throw new Error('token_type')
const { payload } = await jose.jwtVerify(first.access_token, jose.createRemoteJWKSet(new URL(as.jwks_uri)), { issuer: as.issuer, typ: 'at+jwt' })
if (!payload['helseid://claims/identity/pid']) throw new Error('person not carried over')

const revoked = await oauth.revocationRequest(as, client, clientAuth, first.refresh_token, insecure)
await oauth.processRevocationResponse(revoked)
try {
  await refresh(first.refresh_token)
  throw new Error('a revoked refresh token was accepted')
} catch (err) {
  if (!(err instanceof oauth.ResponseBodyError) || err.error !== 'invalid_grant') throw err
}
console.log('verified refresh rotation and revocation')
