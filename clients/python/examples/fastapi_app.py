"""A FastAPI route that needs a valid latchkey access token.

    pip install fastapi uvicorn ./clients/python
    uvicorn examples.fastapi_app:app
"""

from fastapi import Depends, FastAPI, Header, HTTPException

from latchkey import InvalidToken, TokenVerifier

verifier = TokenVerifier.from_http(
    "http://127.0.0.1:8080", issuer="latchkey", audience="latchkey", tenant_id="default"
)


def current_user(authorization: str = Header(default="")) -> dict:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "a bearer token is required")
    try:
        return verifier.verify(token)
    except InvalidToken as error:
        raise HTTPException(401, str(error)) from None


app = FastAPI()


@app.get("/me")
def me(claims: dict = Depends(current_user)) -> dict:
    return {"user_id": claims["sub"], "email": claims["email"]}
