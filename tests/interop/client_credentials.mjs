// client_credentials with private_key_jwt through oauth4webapi, then the access token checked
// with jose against the issuer's published JWKS. Env: ISSUER, CLIENT_ID, CLIENT_JWK, SCOPE.
import * as oauth from 'oauth4webapi'
import * as jose from 'jose'

const issuer = new URL(process.env.ISSUER)
const jwk = JSON.parse(process.env.CLIENT_JWK)

const as = await oauth.processDiscoveryResponse(
  issuer,
  await oauth.discoveryRequest(issuer, { [oauth.allowInsecureRequests]: true }),
)
const client = { client_id: process.env.CLIENT_ID }
const privateKey = { key: await jose.importJWK(jwk, jwk.alg), kid: jwk.kid }
const clientAuth = oauth.PrivateKeyJwt(privateKey)

const response = await oauth.clientCredentialsGrantRequest(
  as, client, clientAuth,
  new URLSearchParams({ scope: process.env.SCOPE }),
  { [oauth.allowInsecureRequests]: true },
)
const result = await oauth.processClientCredentialsResponse(as, client, response)
if (result.token_type.toLowerCase() !== 'bearer') throw new Error(`token_type ${result.token_type}`)

const jwks = jose.createRemoteJWKSet(new URL(as.jwks_uri), {})
const { payload, protectedHeader } = await jose.jwtVerify(result.access_token, jwks, {
  issuer: as.issuer,
  typ: 'at+jwt',
})
if (payload.client_id !== client.client_id) throw new Error('client_id claim')
if (!Array.isArray(payload.scope) || !payload.scope.includes(process.env.SCOPE)) throw new Error('scope claim')

// A replayed assertion is refused by the server (oauth4webapi surfaces the OAuth error).
const fixed = oauth.PrivateKeyJwt(privateKey, {
  [oauth.modifyAssertion]: (_header, payload) => { payload.jti = 'interop-fixed-jti' },
})
const first = await oauth.clientCredentialsGrantRequest(as, client, fixed, new URLSearchParams({ scope: process.env.SCOPE }), { [oauth.allowInsecureRequests]: true })
await oauth.processClientCredentialsResponse(as, client, first)
const second = await oauth.clientCredentialsGrantRequest(as, client, fixed, new URLSearchParams({ scope: process.env.SCOPE }), { [oauth.allowInsecureRequests]: true })
try {
  await oauth.processClientCredentialsResponse(as, client, second)
  throw new Error('a replayed assertion was accepted')
} catch (e) {
  if (!(e instanceof oauth.ResponseBodyError) || e.error !== 'invalid_client') throw e
}

console.log(`verified ${protectedHeader.alg} token for ${payload.aud} (${payload.client_id})`)
